"""The compiled hot path of a load, built by ``pip install -e .``: the PATIENT reader
(rpu/formats/patient_reader.pyx) and the COPY row of a clean visit (rpu/store/clean_rows.pyx).

Optional: where no C compiler is, the build goes on without them and the Python reader reads
every record, the checker's path writes every row (same results, slower). Everything else is
declared in pyproject.toml."""

import lxml
from setuptools import Extension, setup

setup(ext_modules=[Extension("rpu.formats.patient_reader", ["plugins/rpu/formats/patient_reader.pyx"],
                             include_dirs=lxml.get_include(), optional=True),
                   Extension("rpu.store.clean_rows", ["plugins/rpu/store/clean_rows.pyx"], optional=True)])
