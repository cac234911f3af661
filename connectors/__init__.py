"""What Parity runs to take messages in and send replies out, one module per connector."""
