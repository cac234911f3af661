"""The Reddit connector: watched subreddits and the account inbox polled in, replies out."""
