"""Telegram: a bot's private chats in (long polling `getUpdates` or a webhook), replies out."""
