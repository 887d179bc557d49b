-- Whether a presence change of the recipient makes a deferred notification
-- due again. A note waiting because the channels open now refused it for good
-- waits for the others' send windows; presence cannot change that, and
-- looking again would only call the refusing channels once more.
-- (PostgreSQL translation of migrations/sqlite/0010_presence_wakes.sql; a 0/1
-- BIGINT flag, not BOOLEAN, as the code reads and writes integers.)
ALTER TABLE notifications ADD COLUMN presence_wakes BIGINT NOT NULL DEFAULT 1;
