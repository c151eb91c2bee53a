//! Goroutine states and wait times per blocking function, from parsed debug=2 dumps.
