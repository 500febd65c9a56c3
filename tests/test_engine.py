"""The tile engine (driftrec_jax.engine): the key rule, batches sharded over 1 or 8 devices.

The restorers here are stand-ins that compile in a moment: one draws each tile's output from its
key (so the output shows which key a tile got), one writes each tile's DDRM tables into it.
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from driftrec_jax import engine, parallel

T = 16  # tile side


def _noise(params, tiles, keys, aux):
    """Each tile becomes uniform noise drawn from its own key (params: a scale, replicated)."""
    x = jax.vmap(lambda k: jax.random.uniform(k, tiles.shape[1:]))(keys) * params["scale"]
    return x, jnp.full((tiles.shape[0],), 3, jnp.int32)


def _tables(params, tiles, keys, aux):
    luma, chroma = aux
    x = jnp.broadcast_to((luma[:, 0, 0] + 10 * chroma[:, 0, 0]).astype(jnp.float32)[:, None, None, None], tiles.shape)
    return x, jnp.ones((tiles.shape[0],), jnp.int32)


PARAMS = {"scale": np.float32(1.0)}


def _want(seed, source_id, k):
    return np.asarray(jax.random.uniform(engine.tile_key(seed, source_id, k), (T, T, 3)))


def test_key_rule_and_its_two_users():
    name = next(f"img{i}.jpg" for i in range(100) if zlib.crc32(f"img{i}.jpg".encode()) >= 2**31)
    crc = zlib.crc32(name.encode())
    want = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(5), crc & 0x7FFFFFFF), 2)
    np.testing.assert_array_equal(engine.tile_key(5, name, 2), want)
    assert engine.source_hash(name) == crc - 2**31  # the top bit is cleared
    # A key may stand for the seed (training grids); non-UTF-8 file names (surrogates) still hash.
    np.testing.assert_array_equal(engine.tile_key(jax.random.PRNGKey(5), name, 2), want)
    assert engine.source_hash("caf\udce9.jpg") == zlib.crc32(b"caf\xe9.jpg") & 0x7FFFFFFF


@pytest.mark.parametrize("devices", [1, 8])
def test_a_tiles_output_depends_on_its_identity_only(devices):
    """The same source restored alone, between others, at another batch position, with another
    batch size and on 1 or 8 devices gets the same output: its tiles' keys come from (seed, source
    id, tile number) only. A two-tile image's tiles get numbers 0 and 1 (row-major)."""
    mesh = parallel.make_mesh(devices)
    rng = np.random.default_rng(0)
    img = lambda w=T: rng.random((T, w, 3), dtype=np.float32)  # noqa: E731
    runs = []
    for batch, others in ((1, 0), (3, 1), (2, 4)):
        eng = engine.TileEngine(_noise, PARAMS, mesh=mesh, tile=T, overlap=0, batch_size=batch)
        assert eng.global_rows == batch * devices
        sources = [engine.Source(f"other{i}", img()) for i in range(others)]
        sources += [engine.Source("wide.png", img(2 * T)), engine.Source("x.png", img())]
        results = {r.source.source_id: r for r in eng.run(sources, seed=7)}
        assert list(results) == [s.source_id for s in sources]  # input order
        runs.append(results)
        assert results["wide.png"].tiles == 2 and results["wide.png"].nfe == 3 == results["x.png"].nfe_max
        for i in range(others):
            np.testing.assert_array_equal(results[f"other{i}"].image, _want(7, f"other{i}", 0))
    for results in runs:
        np.testing.assert_array_equal(results["x.png"].image, _want(7, "x.png", 0))
        np.testing.assert_array_equal(results["wide.png"].image[:, :T], _want(7, "wide.png", 0))
        np.testing.assert_array_equal(results["wide.png"].image[:, T:], _want(7, "wide.png", 1))
    other_seed = engine.TileEngine(_noise, PARAMS, mesh=mesh, tile=T, overlap=0).restore([img()], seed=8,
                                                                                        source_ids=["x.png"])
    assert np.abs(other_seed[0] - _want(7, "x.png", 0)).mean() > 0.1


def test_tables_reach_their_own_tiles_and_padding_calls():
    """DDRM tables travel with each source's tiles; `calls` pads with empty batches; too few
    planned calls is an error (a process must never call more often than the others)."""
    mesh = parallel.make_mesh(8)
    eng = engine.TileEngine(_tables, PARAMS, mesh=mesh, tile=T, overlap=0, batch_size=1, tables=True)
    assert eng.calls_for(9) == 2 and list(eng.plan_calls([9, 0])) == [2, 0]
    tables = lambda a, b: (np.full((8, 8), a, np.int32), np.full((8, 8), b, np.int32))  # noqa: E731
    srcs = lambda: [engine.Source(f"s{i}", np.zeros((T, 3 * T, 3), np.float32), tables(i, i + 1))  # noqa: E731
                    for i in range(3)]
    seen = []

    class Bar:
        def update(self, n):
            seen.append(n)

    out = list(eng.run(srcs(), progress=Bar(), calls=4))
    assert seen == [8, 1]  # 9 tiles: 8 then 1; the two padding calls report nothing
    for i, r in enumerate(out):
        np.testing.assert_array_equal(r.image, np.full((T, 3 * T, 3), i + 10 * (i + 1), np.float32))
    with pytest.raises(RuntimeError, match="planned"):
        list(eng.run(srcs(), calls=1))
    with pytest.raises(ValueError, match="tables"):
        list(eng.run([engine.Source("no tables", np.zeros((T, T, 3), np.float32))]))


def test_batch_size_defaults_and_lowering():
    mesh = parallel.make_mesh(8)
    assert engine.default_batch_size(mesh) == engine.DEFAULT_BATCH_CPU == 1
    eng = engine.TileEngine(_noise, PARAMS, mesh=mesh, tile=T, overlap=0, batch_size=4, max_tiles=9)
    assert (eng.batch_size, eng.global_rows, eng.rows) == (2, 16, 16)  # 9 tiles need 2 per device
    with pytest.raises(ValueError, match="overlap"):
        engine.TileEngine(_noise, PARAMS, mesh=mesh, tile=T, overlap=8)
