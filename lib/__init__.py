"""Brain-tumour MRI toolkit: the code every numbered stage shares."""
