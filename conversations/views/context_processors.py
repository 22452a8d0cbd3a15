from conversations.services.accounts import signup_modes


def kimichat(request):
    # Called only by a template that shows it (the log-in page): other pages do not read the settings row.
    return {"signup_enabled": lambda: signup_modes.current_mode() != signup_modes.Mode.CLOSED}
