"""ftlab: the package behind the fine-tuning course.

The notebooks, labs, command line (`ftlab ...`) and local fine-tuning server all
import from here, so no logic is pasted between notebooks.
"""

__version__ = "0.1.0"
