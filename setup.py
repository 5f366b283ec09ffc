"""pip entry point; metadata lives in setup.cfg (ROS builds use CMakeLists.txt)."""
from setuptools import setup

setup()
