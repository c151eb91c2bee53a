//! Parser for the `# runtime.MemStats` block of `heap?debug=1`.
