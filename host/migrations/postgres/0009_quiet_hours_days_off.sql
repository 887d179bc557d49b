-- A person's days off, as a JSON array of dates in their time zone
-- (["2026-12-25"]): their working hours do not apply on those dates.
-- (PostgreSQL translation of migrations/sqlite/0009_quiet_hours_days_off.sql.)
ALTER TABLE users ADD COLUMN days_off TEXT COLLATE "C";
-- A person's quiet hours, per weekday or "daily", as JSON
-- ({"daily": ["22:00", "07:00"]}): only emergencies reach them then.
ALTER TABLE users ADD COLUMN quiet_hours TEXT COLLATE "C";
-- The delivery log the router's optimal timing reads: a person's acknowledged
-- notifications, newest first.
CREATE INDEX notifications_acked ON notifications (tenant, recipient, delivered_at)
    WHERE acked_at IS NOT NULL;
-- Due emergencies, claimed before everything else.
CREATE INDEX notifications_emergency_due ON notifications (due_at)
    WHERE urgency = 'emergency' AND due_at IS NOT NULL;
