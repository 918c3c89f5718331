"""Data: make your own dataset where you are: name classes, add photos by upload or camera,
check them as thumbnails, then train on it (``?data=<id>`` links to one)."""

import streamlit as st

from tl.config import RunConfig
from ui.check_view import check_panel
from ui.data_view import add_photos, classes, next_steps, pick_dataset, ready
from ui.state import runs_dir

st.title("Data")
st.caption("Make your own dataset: name a class, add its photos by upload or with the camera, repeat for each "
           "class, then train.")
root = runs_dir()
dataset = pick_dataset(root)
if dataset is None:
    st.stop()
add_photos(dataset)
classes(dataset)
next_steps(dataset, root)
st.subheader("Check my data")
if ready(dataset):
    st.caption(f"{ready(dataset)} Then check which photos may be in the wrong class.")
else:
    check_panel(RunConfig(dataset=dataset.ref), root, "data", dataset)
