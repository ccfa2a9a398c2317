# cython: language_level=3, boundscheck=False, wraparound=False
"""The usual PATIENT read in C: the national children in the national order, their texts.

The reader's hot path (``rpu.formats.oscour._read_record``) made one Python object per child
of each PATIENT to read its tag and its text: over half the time spent above lxml's own parse.
This walks libxml2's nodes through lxml's public C API instead, reading exactly what lxml's
``element[:]``, ``.tag`` and ``.text`` give, and builds only the strings. It only reads: the
tree stays lxml's. Any other shape (a child missing, added, moved, namespaced, a comment)
returns None and the Python reader takes the record, as it takes every record when this
module is not built (it is optional: ``pip install -e .`` builds it where a C compiler is).
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport strcmp, strlen
from lxml.includes cimport tree
from lxml.includes.etreepublic cimport LXML_VERSION_STRING, _Element, import_lxml__etree
from lxml.includes.tree cimport xmlNode

import_lxml__etree()

# The lxml whose headers this was compiled against: the reader reads lxml's own structures, so
# rpu.formats.oscour uses it only under that very version (pyproject.toml pins the build's lxml
# to requirements.txt's).
BUILT_WITH_LXML = LXML_VERSION_STRING.decode("ascii")

# The PATIENT children of the national format in their order (as rpu.formats.oscour's).
NATIONAL_ORDER = ("CP", "COMMUNE", "NAISSANCE", "SEXE", "ENTREE", "MODE_ENTREE", "PROVENANCE", "TRANSPORT",
                  "TRANSPORT_PEC", "MOTIF", "GRAVITE", "DP", "LISTE_DA", "LISTE_ACTES", "SORTIE", "MODE_SORTIE",
                  "DESTINATION", "ORIENT")
cdef tuple _NAMES = tuple(name.encode("ascii") for name in NATIONAL_ORDER)
cdef const char* _names[18]
for _position in range(18):
    _names[_position] = _NAMES[_position]
cdef int _CHILDREN = 18, _DA_AT = 12, _ACTES_AT = 13


cdef inline bint _is_child(xmlNode* node) noexcept:
    # What lxml counts as a child (element[:]): elements, comments, entity references, PIs.
    return node.type == tree.XML_ELEMENT_NODE or node.type == tree.XML_COMMENT_NODE \
        or node.type == tree.XML_ENTITY_REF_NODE or node.type == tree.XML_PI_NODE


cdef inline bint _named(xmlNode* node, const char* name) noexcept:
    # lxml's tag == name: an element without namespace of that name.
    return node.type == tree.XML_ELEMENT_NODE and node.ns is NULL and strcmp(<const char*>node.name, name) == 0


cdef inline xmlNode* _text_or_skip(xmlNode* node) noexcept:
    # lxml's _textNodeOrSkip: a text node, XInclude markers skipped, NULL at anything else.
    while node is not NULL:
        if node.type == tree.XML_TEXT_NODE or node.type == tree.XML_CDATA_SECTION_NODE:
            return node
        if node.type == tree.XML_XINCLUDE_START or node.type == tree.XML_XINCLUDE_END:
            node = node.next
        else:
            return NULL
    return NULL


cdef object _text(xmlNode* element):
    # lxml's element.text (_collectText): the run of text nodes the element starts with; None
    # when there is none, "" when they are all empty.
    cdef xmlNode* first = _text_or_skip(element.children)
    cdef xmlNode* node = first
    cdef const char* content = NULL
    cdef int count = 0
    while node is not NULL:
        if node.content[0] != 0:
            content = <const char*>node.content
        count += 1
        node = _text_or_skip(node.next)
    if content is NULL:
        return "" if count else None
    if count == 1:
        return PyUnicode_DecodeUTF8(content, strlen(content), NULL)
    joined = b""
    node = first
    while node is not NULL:
        joined += <bytes>(<const char*>node.content)
        node = _text_or_skip(node.next)
    return joined.decode("utf-8")


cdef list _items(xmlNode* parent, const char* name):
    # [item.text or "" for item in parent if item.tag == name]
    cdef list items = []
    cdef xmlNode* node = parent.children
    while node is not NULL:
        if _named(node, name):
            text = _text(node)
            items.append(text if text else "")
        node = node.next
    return items


def read_national(_Element patient):
    """``(values, da, actes)`` of a PATIENT whose children are the national ones in the national
    order: the 16 simple fields' texts (None for an empty element) in that order, the DA and
    ACTE texts. None for any other PATIENT."""
    cdef xmlNode* node = patient._c_node.children
    cdef xmlNode* da = NULL
    cdef xmlNode* actes = NULL
    cdef int at = 0
    cdef list values = []
    while node is not NULL:
        if _is_child(node):
            if at >= _CHILDREN or not _named(node, _names[at]):
                return None
            if at == _DA_AT:
                da = node
            elif at == _ACTES_AT:
                actes = node
            else:
                values.append(_text(node))
            at += 1
        node = node.next
    if at != _CHILDREN:
        return None
    return values, _items(da, b"DA"), _items(actes, b"ACTE")
