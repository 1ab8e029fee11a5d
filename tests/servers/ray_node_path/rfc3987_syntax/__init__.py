"""Stands in for rfc3987-syntax in the test cluster's processes: absent, as in a plain `gpuferry[cluster]`.

jupyter_server (a test dependency) brings jsonschema[format-nongpl], whose optional IRI check imports
rfc3987-syntax, which builds a Lark grammar at import: 4.5 s of CPU in every process that imports Ray
(each node's agents, each worker process Ray starts for a task or an actor). jsonschema skips that
check on ImportError, and Ray's runtime-env schemas use no IRI format.
"""

raise ImportError("rfc3987_syntax is left out of the Ray test cluster's processes (see this file)")
