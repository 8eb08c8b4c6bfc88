"""The built-in algorithms: pure array code, no pandas, paths or globals."""
