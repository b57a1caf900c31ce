"""Helpers of the end-to-end suite: server control, SMTP clients, Maildir scanning."""
