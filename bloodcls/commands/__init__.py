"""The ``bloodcls`` tool commands, one module each with a ``main(argv)``; ``common`` holds what they share
(``download_archive`` is the download command's zip checking).

``bloodcls <name> ...`` imports ``bloodcls.commands.<name>`` only when that command runs, so ``bloodcls fit`` never
pays for Ray, ONNX or scikit-image. A new command is one module here plus one line in ``bloodcls.entry.TOOL_COMMANDS``.
"""
