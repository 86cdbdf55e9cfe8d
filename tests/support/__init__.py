"""Support code shared by the test layers: launchers for real servers the tests run."""
