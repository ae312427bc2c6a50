"""Ray adapters: the only package that imports ``ray``. Each module wraps one pipeline step
around a pure core from the layers below and declares its resources from config."""
