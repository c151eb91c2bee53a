//! Parser for `goroutine?debug=2` text dumps.
