-- Issue 5 (S13): a user's own e-mail address, to which their change notifications are mailed.
-- Optional; without one a notification is mailed to the configured SMTP recipients as before.
ALTER TABLE users ADD COLUMN email TEXT;
