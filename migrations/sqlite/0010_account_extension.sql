-- Ringfort schema v10 (SQLite): a panel account may own one extension, as a PBX user
-- owns their phone: a `user` account reaches that extension's voicemail, forwarding, DND
-- and SIP password on the self-service page. Removing the extension unlinks the account.
ALTER TABLE admins ADD COLUMN extension TEXT REFERENCES extensions (number) ON DELETE SET NULL;
CREATE INDEX admins_extension ON admins (extension);
