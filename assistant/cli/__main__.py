"""`python -m assistant.cli`: the same as the `assistant` command."""

from assistant.cli import main

if __name__ == "__main__":  # not when a tool imports every module of the package
    main()
