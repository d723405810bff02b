"""The usage dashboard: server-rendered pages under /dashboard for customers and admins."""
