-- The notes an attempt's message carried besides its own (a digest), as a JSON
-- array of ids; NULL for a single note. A note that rode in a digest counts as
-- delivered only if a delivered attempt of its lead carried it.
-- (PostgreSQL translation of migrations/sqlite/0011_attempt_carried.sql.)
ALTER TABLE notification_attempts ADD COLUMN carried TEXT COLLATE "C";
