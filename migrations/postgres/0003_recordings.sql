-- Ringfort schema v3 (PostgreSQL): call recordings.
-- The WAV file of a recorded call (`[calls] record`), as the node that recorded it names
-- it; NULL when the call was not recorded.
ALTER TABLE cdrs ADD COLUMN recording TEXT;
