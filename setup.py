"""The compiled PATIENT reader (rpu/formats/patient_reader.pyx), built by ``pip install -e .``.

Optional: where no C compiler is, the build goes on without it and the Python reader reads
every record (same results, slower). Everything else is declared in pyproject.toml."""

import lxml
from setuptools import Extension, setup

setup(ext_modules=[Extension("rpu.formats.patient_reader", ["plugins/rpu/formats/patient_reader.pyx"],
                             include_dirs=lxml.get_include(), optional=True)])
