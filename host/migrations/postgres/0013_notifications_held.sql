-- The claims held on a recipient's notifications, which the claim query looks
-- for before taking any other of theirs: only rows with a claim are indexed
-- (a settled row's claim is cleared), so the look-up stays small however long
-- a recipient's history grows.
CREATE INDEX notifications_held ON notifications (tenant, recipient, claimed_until)
    WHERE claimed_until IS NOT NULL;
