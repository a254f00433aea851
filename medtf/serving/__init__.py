"""medtf.serving"""
