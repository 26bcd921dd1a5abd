"""Applications built on the library: predict, explain, export, CAM crops, synthesis, reports."""
