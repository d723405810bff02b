"""Who a request is: the principal a key stands for (and the one key-status rule), and the key
format. Imports nothing of the project, so that every layer may use it."""
