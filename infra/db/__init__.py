"""PostgreSQL access through asyncpg: the pool and versioned migrations."""
