"""spartan_ros: a searchable visual memory for vehicles (SPARTAN pose-aware Long-CLIP retrieval)."""
