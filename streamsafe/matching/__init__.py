"""Hash banks and indexes; pure code, no Faust imports."""
