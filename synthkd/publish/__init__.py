"""Share and inspect a finished run: dataset card, Hub push, HTML report, terminal viewer.

Kept import-light: the recipe imports `synthkd.publish.config`, and plotting or Hub libraries are
loaded only by the module that needs them.
"""
