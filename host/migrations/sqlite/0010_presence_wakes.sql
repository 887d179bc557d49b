-- Whether a presence change of the recipient makes a deferred notification
-- due again. A note waiting because the channels open now refused it for good
-- waits for the others' send windows; presence cannot change that, and
-- looking again would only call the refusing channels once more.
ALTER TABLE notifications ADD COLUMN presence_wakes INTEGER NOT NULL DEFAULT 1;
