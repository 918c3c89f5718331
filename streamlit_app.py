"""Transfer Learning Studio: page config and navigation. Imports no TensorFlow."""

import streamlit as st

st.set_page_config(page_title="Transfer Learning Studio", page_icon=":material/school:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
]

st.navigation(PAGES).run()
