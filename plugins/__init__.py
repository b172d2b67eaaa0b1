"""Built-in geoxai evaluation plugins, registered through the ``geoxai.plugins`` entry points."""
