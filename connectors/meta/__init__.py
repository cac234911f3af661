"""Meta: WhatsApp (Cloud API), Messenger and Instagram Direct through one signed webhook."""
