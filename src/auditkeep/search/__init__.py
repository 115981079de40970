"""Search that finds everything (issue #13): the background indexer behind `q`."""
