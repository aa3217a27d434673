"""tickkit's built-in plugins (``tickkit.plugins``), found through the ``tickkit.plugins``
entry-point group like any third-party plugin."""
