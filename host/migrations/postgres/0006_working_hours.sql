-- A person's working hours, per weekday, as JSON ({"mon": ["09:00", "18:00"], ...}),
-- wall-clock times in their time zone. NULL: no working-hours signal.
-- (PostgreSQL translation of migrations/sqlite/0006_working_hours.sql.)
ALTER TABLE users ADD COLUMN working_hours TEXT COLLATE "C";
