//! Test support for Annals: a throwaway PostgreSQL cluster started from the server binaries.
