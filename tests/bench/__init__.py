"""On-demand speed benchmark of llmrelay against bare forwarders; see README.md."""
