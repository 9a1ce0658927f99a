"""Phase 2, making slices comparable (stages 02_clean and 03_enhance): crop, square, resize, enhance."""
