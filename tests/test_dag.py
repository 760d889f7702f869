"""The DAG: nodes, edges, queries, validation and loading from a dict."""

from __future__ import annotations

import itertools

import pytest

from tukio.dag import DAG, DAGValidationError
from tukio.errors import TemplateError, TukioError


def diamond() -> DAG[str]:
    """a -> b, a -> c, b -> d, c -> d."""
    return DAG.from_dict({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []})


def named_cycle(error: pytest.ExceptionInfo[DAGValidationError]) -> list[str]:
    """The closed path ``[a, b, ..., a]`` named by a cycle error's message."""
    message = str(error.value)
    assert message.startswith("graph: cycle ")
    cycle = message.removeprefix("graph: cycle ").split(" -> ")
    assert cycle[0] == cycle[-1]
    return cycle


def test_empty_dag() -> None:
    dag: DAG[str] = DAG()
    assert dag.graph == {}
    assert len(dag) == 0
    assert dag.root_nodes() == []
    assert dag.leaves() == []
    assert dag.edges() == []
    assert dag.is_valid()
    dag.validate()


def test_add_node() -> None:
    dag: DAG[str] = DAG()
    dag.add_node("a")
    dag.add_node("b")
    assert dag.graph == {"a": set(), "b": set()}
    assert len(dag) == 2
    with pytest.raises(ValueError, match="node 'a' already exists"):
        dag.add_node("a")
    assert dag.graph == {"a": set(), "b": set()}


def test_delete_node_drops_its_edges() -> None:
    dag = diamond()
    dag.delete_node("b")
    assert dag.graph == {"a": {"c"}, "c": {"d"}, "d": set()}
    dag.delete_node("d")
    assert dag.graph == {"a": {"c"}, "c": set()}
    with pytest.raises(KeyError, match="node 'b' does not exist"):
        dag.delete_node("b")


def test_add_edge() -> None:
    dag: DAG[str] = DAG()
    dag.add_node("a")
    dag.add_node("b")
    dag.add_edge("a", "b")
    dag.add_edge("a", "b")  # adding it again changes nothing
    assert dag.graph == {"a": {"b"}, "b": set()}
    with pytest.raises(KeyError, match="node 'z' does not exist"):
        dag.add_edge("a", "z")
    with pytest.raises(KeyError, match="node 'z' does not exist"):
        dag.add_edge("z", "a")
    assert dag.graph == {"a": {"b"}, "b": set()}


def test_add_edge_closing_a_cycle_leaves_the_graph_unchanged() -> None:
    dag = diamond()
    before = {node: set(succs) for node, succs in dag.graph.items()}
    with pytest.raises(DAGValidationError, match="graph: cycle") as info:
        dag.add_edge("d", "a")
    assert set(named_cycle(info)) in ({"a", "b", "d"}, {"a", "c", "d"})
    assert dag.graph == before
    with pytest.raises(DAGValidationError, match=r"graph: cycle b -> b"):
        dag.add_edge("b", "b")
    assert dag.graph == before
    assert dag.is_valid()


def test_delete_edge() -> None:
    dag = diamond()
    dag.delete_edge("a", "b")
    assert dag.successors("a") == ["c"]
    assert dag.root_nodes() == ["a", "b"]
    with pytest.raises(KeyError, match="edge 'a' -> 'b' does not exist"):
        dag.delete_edge("a", "b")
    with pytest.raises(KeyError, match="edge 'x' -> 'a' does not exist"):
        dag.delete_edge("x", "a")


def test_predecessors_successors_leaves_roots_edges() -> None:
    dag = diamond()
    assert sorted(dag.predecessors("d")) == ["b", "c"]
    assert dag.predecessors("a") == []
    assert dag.predecessors("unknown") == []
    assert sorted(dag.successors("a")) == ["b", "c"]
    assert dag.successors("d") == []
    with pytest.raises(KeyError):
        dag.successors("unknown")
    assert dag.leaves() == ["d"]
    assert dag.root_nodes() == ["a"]
    assert sorted(dag.edges()) == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]


def test_root_nodes_keep_insertion_order() -> None:
    dag = DAG.from_dict({"z": [], "a": ["m"], "m": [], "b": []})
    assert dag.root_nodes() == ["z", "a", "b"]
    assert dag.leaves() == ["z", "m", "b"]


def test_copy_is_independent() -> None:
    dag = diamond()
    clone = dag.copy()
    assert clone.graph == dag.graph
    assert clone is not dag
    clone.delete_edge("a", "b")
    clone.add_node("e")
    assert dag.graph == diamond().graph
    assert "e" not in dag.graph
    dag.delete_node("d")
    assert "d" in clone.graph


def test_validate_and_is_valid_on_a_cycle() -> None:
    dag = diamond()
    # Bypass add_edge's own check to build an invalid graph.
    dag.graph["d"].add("a")
    assert not dag.is_valid()
    with pytest.raises(DAGValidationError, match="graph: cycle") as info:
        dag.validate()
    cycle = named_cycle(info)
    assert set(cycle) in ({"a", "b", "d"}, {"a", "c", "d"})
    # A real cycle: every consecutive pair is an edge.
    assert all(succ in dag.graph[pred] for pred, succ in itertools.pairwise(cycle))


def test_dag_validation_error_is_in_the_tree() -> None:
    assert issubclass(DAGValidationError, TemplateError)
    assert issubclass(DAGValidationError, TukioError)
    assert issubclass(DAGValidationError, ValueError)
    error = DAGValidationError("graph: cycle a -> a")
    assert error.problems == ["graph: cycle a -> a"]


def test_from_dict() -> None:
    dag = DAG.from_dict({"a": ["b"], "b": [], "c": []})
    assert dag.graph == {"a": {"b"}, "b": set(), "c": set()}
    assert DAG.from_dict({}).graph == {}


def test_from_dict_undefined_successor() -> None:
    with pytest.raises(KeyError, match="successor 'x' of 'a' is not a node"):
        DAG.from_dict({"a": ["x"]})


@pytest.mark.parametrize("successors", [("b",), "b", {"b"}, None, {"b": 1}])
def test_from_dict_successors_not_a_list(successors: object) -> None:
    with pytest.raises(TypeError, match="successors of 'a' must be a list"):
        DAG.from_dict({"a": successors, "b": []})  # type: ignore[dict-item]


def test_from_dict_cycle() -> None:
    with pytest.raises(DAGValidationError, match="graph: cycle") as info:
        DAG.from_dict({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]})
    # Any rotation of a -> b -> c -> a names the cycle; d leads into it but is not part of it.
    cycle = named_cycle(info)
    assert " -> ".join(cycle) in ("a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c")
    with pytest.raises(DAGValidationError, match="graph: cycle x -> x"):
        DAG.from_dict({"x": ["x"]})


def test_cycle_names_use_node_uids() -> None:
    class Node:
        def __init__(self, uid: str) -> None:
            self.uid = uid

    one, two = Node("one"), Node("two")
    dag: DAG[Node] = DAG()
    dag.add_node(one)
    dag.add_node(two)
    dag.add_edge(one, two)
    with pytest.raises(DAGValidationError, match=r"graph: cycle (one -> two -> one|two -> one -> two)$"):
        dag.add_edge(two, one)


def test_a_long_chain_validates_without_recursion_error() -> None:
    size = 5000
    graph = {f"n{i}": [f"n{i + 1}"] for i in range(size - 1)}
    graph[f"n{size - 1}"] = []
    dag = DAG.from_dict(graph)
    assert dag.is_valid()
    dag.validate()
    assert dag.root_nodes() == ["n0"]
    assert dag.leaves() == [f"n{size - 1}"]
    # Closing the chain into one long cycle is found and named, also iteratively.
    with pytest.raises(DAGValidationError, match=r"^graph: cycle n0 -> n1 -> .* -> n4999 -> n0 \(a cycle of 5000\)$"):
        dag.add_edge(f"n{size - 1}", "n0")
    graph[f"n{size - 1}"] = ["n0"]
    with pytest.raises(DAGValidationError, match="graph: cycle"):
        DAG.from_dict(graph)


def test_repr() -> None:
    assert repr(DAG.from_dict({"a": []})) == "DAG({'a': set()})"
