"""Pure domain code: no I/O beyond reading the packaged price book, no framework imports."""
