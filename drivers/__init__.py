"""tickkit's built-in drivers (``tickkit.drivers``), found through the ``tickkit.drivers``
entry-point group like any third-party driver."""
