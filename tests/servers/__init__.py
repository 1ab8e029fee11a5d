"""Real servers for tests: OpenSSH sshd and jupyter_server on 127.0.0.1, each in a temp directory."""
