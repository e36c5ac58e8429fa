"""The admin dashboard: server-rendered pages under /dashboard for operators."""
