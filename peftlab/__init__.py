"""peftlab: train LoRA and Textual Inversion, run blind preference studies, test the results."""
