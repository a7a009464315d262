//! Hostile policy files: deep nesting, oversized files, idle reload loops.
