"""Idempotency-Key: a billed answer kept 24 h per account and key, replayed to retries."""
