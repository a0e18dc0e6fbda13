"""What a process tells its operators, below every component that reports: the bounded event
log, latency histograms and the log format. Imports nothing else of ramster."""
