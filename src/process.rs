//! The target's process: its PID (found by the port it listens on) and its memory.
