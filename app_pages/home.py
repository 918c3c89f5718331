"""Home: what the app does, the four-case advisor, and which device training will use."""

import streamlit as st

from tl import devices
from tl.advisor import LARGE_PER_CLASS, recommend
from tl.backbones import BACKBONES
from tl.config import RunConfig

st.title("Transfer Learning Studio")
st.markdown(
    "Take a CNN pretrained on ImageNet (EfficientNet-Lite0 by default: its weights install with "
    "the app, so nothing is downloaded; ResNet-50 and others are one choice away) and transfer "
    "it to **your** image classes. Pick a dataset, a strategy and a head, train, and watch what each choice "
    "does: live curves, test accuracy, the confusion matrix and the images it got wrong."
)


@st.cache_data(show_spinner=False)
def training_device() -> str:
    return devices.describe_quickly()


st.caption(f"Training will run on: **{training_device()}**")

st.subheader("Which strategy fits your data?")
left, middle, right = st.columns(3)
per_class = left.number_input(
    "Images per class", min_value=1, value=200, step=50, key="advisor_images",
    help=f"Roughly how many labelled images each class has. {LARGE_PER_CLASS:,} or more counts as large.")
similar = middle.radio(
    "Do your images look like everyday photos?", ["Yes, like photos of objects, animals, scenes",
                                                  "No (X-rays, satellite, drawings, microscopy...)"],
    key="advisor_similar", help="ImageNet is everyday photos; the further from them, the less its top layers help.")
backbone = right.selectbox(
    "Backbone", list(BACKBONES), index=list(BACKBONES).index(RunConfig().backbone), key="advisor_backbone",
    help="The network to transfer; the baselines (small_cnn, perceptron) have no pretrained weights, so "
         "nothing can be transferred with them.")
advice = recommend(int(per_class), similar.startswith("Yes"), backbone=backbone)
# An explicit icon: without one Streamlit scans the text for a leading emoji, and the first
# scan of non-ASCII text loads its emoji catalogue (0.3 s of this page's cold start).
st.info(f"**{advice.case[:1].upper() + advice.case[1:]}** → strategy **{advice.strategy}**, head "
        f"**{advice.head}**. {advice.reason}", icon=":material/lightbulb:")
if st.button("Open Train with these choices", key="advisor_open", type="primary"):
    st.session_state["train_prefill"] = {"backbone": backbone, "strategy": advice.strategy, "head": advice.head}
    st.switch_page("app_pages/train.py")

st.markdown(
    "| data | like everyday photos | strategy |\n|---|---|---|\n"
    "| small | yes | `feature_extraction`: a classifier on the frozen network's features |\n"
    "| small | no | `earlier_layer`: the same on an earlier block's features |\n"
    "| large | yes | `fine_tune`: train the head, then the top layers at a low learning rate |\n"
    "| large | no | `full_fine_tune`: retrain everything from the ImageNet start |\n"
    "| any | any, but no pretrained weights (small_cnn, perceptron, or weights 'none') | `scratch`: "
    "nothing to transfer, so train the whole network |"
)
